//! A small fleet-scale run in the suite, so the fleet benchmark
//! (`loadtest` `fleet`) cannot rot: 200 generated images from the
//! synthetic registry through a real cluster (nats-server, coordinator,
//! two worker processes), registered by repository, then a refresh with
//! moved tags, a full re-match and an advisory update through a feed.

// The serial guard (a std Mutex) is held across awaits on purpose: it
// serializes whole tests, each on its own runtime.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use strata_harness::fixtures::serial;
use strata_loadtest::fleetrun;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_images_each_layer_fetched_once_and_a_refresh_fetches_only_new_layers() {
    let _serial = serial();
    let mut options = fleetrun::options(200, 2, STRATA.into());
    options.fleet.base_bytes = 32 << 10;
    options.fleet.app_bytes = 4 << 10;
    options.timeout = Duration::from_secs(300);
    let r = fleetrun::run(&options, true).await.unwrap();
    let summary = fleetrun::markdown("test", &r);

    // Every image reported, nothing failed, real findings.
    assert_eq!(r.images_complete, r.tags as u64, "{summary}");
    assert_eq!(r.images_failed, 0, "{summary}");
    assert!(r.findings > 0, "{summary}");
    // Each unique layer pulled exactly once, though images list them
    // many times over.
    assert_eq!(r.blob_fetches, r.unique_layers as u64, "{summary}");
    assert!(r.layer_references > 2 * r.unique_layers, "{summary}");
    assert!(r.bytes_fetched < r.bytes_without_dedup, "{summary}");
    // 1% of the tags moved: only their new code layers fetched.
    assert_eq!(r.refresh.tags_moved, r.tags.div_ceil(100), "{summary}");
    assert!(r.refresh.new_layers >= 1, "{summary}");
    assert_eq!(r.refresh.blob_fetches, r.refresh.new_layers as u64, "{summary}");
    // A full re-match finds the same findings.
    assert_eq!(r.rematch.images_changed, 0, "{summary}");
    assert!(r.rematch.distinct_packages > 0, "{summary}");
    // An advisory on a package every Python base has, added through a
    // feed: those images gain findings, without a pull.
    assert!(r.advisory_update.images_changed > 0, "{summary}");
    assert!(
        r.advisory_update.findings_new >= r.advisory_update.images_changed,
        "{summary}"
    );
    assert!(!r.samples.is_empty());
}

/// `fleet --server`: the run against a cluster it did not start (here one
/// the test starts, as an SRE would have): the fleet registered through
/// that coordinator, every image reported, each layer fetched once, NATS
/// storage read from the server, the advisory update written to the
/// directory that cluster polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_runs_through_a_cluster_started_elsewhere() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let pypi = strata_loadtest::fleetgen::data::default_testdata().join("osv/PyPI/all.zip");
    let db = strata_harness::fixtures::import_db(
        std::process::Command::new(STRATA),
        dir.path(),
        &[pypi.as_path()],
    );
    let feed_dir = dir.path().join("feed");
    std::fs::create_dir_all(&feed_dir).unwrap();
    std::fs::write(
        feed_dir.join("EXISTING-0.json"),
        serde_json::json!({
            "schema_version": "1.6.0", "id": "EXISTING-0", "modified": "2026-01-01T00:00:00Z",
            "affected": [{ "package": { "ecosystem": "PyPI", "name": "strata-no-such-package" },
                           "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "0" }] }] }],
        })
        .to_string(),
    )
    .unwrap();
    let port = strata_harness::fixtures::free_port();
    let registry_host = format!("127.0.0.1:{port}");
    let cluster = strata_harness::Cluster::builder(STRATA)
        .workers(1)
        .db(&db)
        .insecure_registry(registry_host.clone())
        .coordinator_args([
            "--feed".to_owned(),
            format!("file://{}/", feed_dir.display()),
            "--feed-interval-secs".to_owned(),
            "2".to_owned(),
        ])
        .start()
        .unwrap();

    let mut options = fleetrun::options(60, 1, STRATA.into());
    options.fleet.base_bytes = 16 << 10;
    options.fleet.app_bytes = 4 << 10;
    options.timeout = Duration::from_secs(300);
    options.registry.listen = Some(registry_host.parse().unwrap());
    options.target = fleetrun::Target::Existing {
        server: cluster.grpc_url(),
        nats: Some(cluster.nats().url()),
        feed_dir: Some(feed_dir.clone()),
    };
    let r = fleetrun::run(&options, true).await.unwrap();
    let summary = fleetrun::markdown("existing", &r);

    assert_eq!(r.cluster, cluster.grpc_url(), "{summary}");
    assert_eq!(r.workers, 1, "{summary}");
    assert_eq!(r.images_complete, r.tags as u64, "{summary}");
    assert_eq!(r.images_failed, 0, "{summary}");
    assert_eq!(r.blob_fetches, r.unique_layers as u64, "{summary}");
    assert_eq!(r.refresh.blob_fetches, r.refresh.new_layers as u64, "{summary}");
    assert!(r.nats_store_bytes > 0, "{summary}");
    assert!(r.advisory_update.written_to_in_force_s > 0.0, "{summary}");
    assert!(r.advisory_update.events > 0, "{summary}");
    // What this side cannot see is said, not printed as zero.
    assert!(summary.contains("not measured (existing cluster)"), "{summary}");
    assert_eq!(r.coordinator_peak_rss_bytes, 0, "{summary}");
    // Logs written to a file carry no colour codes (issue 16).
    let (coordinator_log, worker_log) = (cluster.coordinator_log(), cluster.worker_log(0));
    assert!(coordinator_log.contains("scan done"), "{coordinator_log}");
    assert!(!coordinator_log.contains('\u{1b}'), "{coordinator_log}");
    assert!(!worker_log.contains('\u{1b}'), "{worker_log}");
}
