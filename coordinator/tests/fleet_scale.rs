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
