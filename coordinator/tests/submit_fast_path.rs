//! `submit` of an image already scanned: one manifest `HEAD`, no config blob
//! GET, no image-record write; a tag moved to another image is noticed.
//! In process: a coordinator on the embedded state store with the
//! in-process queue and a worker (what `strata serve` runs), a registry
//! behind a counting proxy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use strata_coordinator::cluster::records::{ScanStatus, image_key};
use strata_coordinator::cluster::{Buckets, Coordinator, CoordinatorConfig, SubmitRequest, VulnData};
use strata_coordinator::vulndb::Db;
use strata_harness::{Compression, Image, Index, Layer, Registry, RegistryProxy};
use strata_worker::job::JobContext;
use strata_worker::queue::{Queue, QueueSettings};
use strata_worker::run::{self, WorkerOptions};
use strata_worker::telemetry::Metrics;
use tokio::sync::watch;

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

struct Setup {
    coordinator: Coordinator,
    buckets: Buckets,
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    _dir: tempfile::TempDir,
}

fn start(pull_host: &str) -> Result<Setup, BoxError> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path())?);
    let mut config = CoordinatorConfig::new(format!("file://{}", dir.path().display()));
    config.source.insecure_registries = vec![pull_host.to_owned()];
    let queue = Queue::memory(QueueSettings::default());
    let metrics = Metrics::new("strata-test-fast-path", None)?;
    let buckets = Buckets::local(&dir.path().join("state.redb"))?;
    let coordinator = Coordinator::new(
        config,
        queue.clone(),
        buckets.clone(),
        store.clone(),
        VulnData::new(&Db::from_advisories(Vec::new(), Vec::new())),
        metrics,
    );
    let (stop, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut ctx = JobContext::new("test", store);
    ctx.source.insecure_registries = vec![pull_host.to_owned()];
    let mut tasks = tokio::task::JoinSet::new();
    {
        let s = stopped();
        tasks.spawn(async move {
            run::run(
                queue,
                ctx,
                WorkerOptions {
                    concurrency: 2,
                    ..WorkerOptions::default()
                },
                s,
            )
            .await;
        });
    }
    {
        let c = coordinator.clone();
        let s = stopped();
        tasks.spawn(async move { c.run(s).await });
    }
    Ok(Setup {
        coordinator,
        buckets,
        stop,
        tasks,
        _dir: dir,
    })
}

impl Setup {
    async fn submit(
        &self,
        reference: &str,
    ) -> Result<(strata_coordinator::cluster::records::ScanRecord, bool), BoxError> {
        self.submit_for(reference, "").await
    }

    async fn submit_for(
        &self,
        reference: &str,
        platform: &str,
    ) -> Result<(strata_coordinator::cluster::records::ScanRecord, bool), BoxError> {
        Ok(self
            .coordinator
            .submit(SubmitRequest {
                reference: reference.to_owned(),
                platform: platform.to_owned(),
                insecure_registry: true,
                ..Default::default()
            })
            .await?)
    }

    async fn complete(&self, id: &str) -> Result<(), BoxError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = self.coordinator.scan(id).await?.ok_or("scan vanished")?;
            if s.status == ScanStatus::Complete {
                return Ok(());
            }
            if s.status == ScanStatus::Failed || Instant::now() > deadline {
                return Err(format!("scan {id} did not complete: {:?} {:?}", s.status, s.error).into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn image_revision(&self, reference: &str) -> Result<u64, BoxError> {
        Ok(self
            .buckets
            .images
            .get(&image_key(reference))
            .await?
            .ok_or("no image record")?
            .revision)
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmit_is_cheap_and_a_moved_tag_is_noticed() -> Result<(), BoxError> {
    let registry = Registry::start()?;
    let proxy = RegistryProxy::builder(&registry).start()?;
    let a = image("a")?;
    let b = image("b")?;
    a.push(&registry, "app", "1").await?;
    let setup = start(&proxy.host())?;
    let reference = format!("{}/app:1", proxy.host());

    let (first, existed) = setup.submit(&reference).await?;
    assert!(!existed);
    assert_eq!(first.image_digest, a.manifest_digest);
    setup.complete(&first.id).await?;
    let config_gets = proxy.blob_requests(&a.config_digest);
    assert_eq!(config_gets, 1, "the first submit reads the config once");
    let revision = setup.image_revision(&reference).await?;

    // Resubmits: the existing scan, without the config blob, without a write.
    for _ in 0..5 {
        let (again, existed) = setup.submit(&reference).await?;
        assert!(existed);
        assert_eq!(again.id, first.id);
    }
    assert_eq!(
        proxy.blob_requests(&a.config_digest),
        config_gets,
        "config fetched again"
    );
    assert_eq!(
        setup.image_revision(&reference).await?,
        revision,
        "the unchanged image record was rewritten"
    );

    // The tag moves: a new scan of B.
    b.push(&registry, "app", "1").await?;
    let (moved, existed) = setup.submit(&reference).await?;
    assert!(!existed, "the moved tag returned the old scan");
    assert_eq!(moved.image_digest, b.manifest_digest);
    assert_ne!(moved.id, first.id);
    assert_eq!(proxy.blob_requests(&b.config_digest), 1);
    setup.complete(&moved.id).await?;
    assert!(
        setup.image_revision(&reference).await? > revision,
        "the moved tag was not recorded"
    );
    let (again, existed) = setup.submit(&reference).await?;
    assert!(existed);
    assert_eq!(again.id, moved.id);
    assert_eq!(proxy.blob_requests(&b.config_digest), 1);

    // And back to A: the earlier scan, still without fetching A's config.
    a.push(&registry, "app", "1").await?;
    let (back, existed) = setup.submit(&reference).await?;
    assert!(existed);
    assert_eq!(back.id, first.id);
    assert_eq!(proxy.blob_requests(&a.config_digest), config_gets);

    // A digest reference needs no request at all to find its scan.
    let by_digest = format!("{}/app@{}", proxy.host(), b.manifest_digest);
    let (pinned, existed) = setup.submit(&by_digest).await?;
    assert!(existed);
    assert_eq!(pinned.id, moved.id);
    assert_eq!(proxy.blob_requests(&b.config_digest), 1);

    setup.stop().await;
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
    let setup = start(&proxy.host())?;
    let reference = format!("{}/multi:1", proxy.host());

    let (amd_scan, _) = setup.submit(&reference).await?;
    assert_eq!(amd_scan.image_digest, amd.manifest_digest);
    let (arm_scan, existed) = setup.submit_for(&reference, "linux/arm64").await?;
    assert!(!existed, "the index's arm64 image is another scan");
    assert_eq!(arm_scan.image_digest, arm.manifest_digest);
    setup.complete(&amd_scan.id).await?;
    setup.complete(&arm_scan.id).await?;
    let (amd_gets, arm_gets) = (
        proxy.blob_requests(&amd.config_digest),
        proxy.blob_requests(&arm.config_digest),
    );
    for _ in 0..3 {
        assert_eq!(setup.submit(&reference).await?.0.id, amd_scan.id);
        assert_eq!(
            setup.submit_for(&reference, "linux/arm64").await?.0.id,
            arm_scan.id
        );
    }
    assert_eq!(proxy.blob_requests(&amd.config_digest), amd_gets);
    assert_eq!(proxy.blob_requests(&arm.config_digest), arm_gets);
    setup.stop().await;
    Ok(())
}
