//! The bridge from an async blob stream to the synchronous layer reader:
//! the walk runs in `spawn_blocking` behind `SyncIoBridge`, so CPU work
//! stays off the async runtime.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use strata_proto::Digest;
use tokio_util::io::SyncIoBridge;

use super::{LayerAnalysis, LayerError, Limits, analyze_layer_keeping};
use crate::analyzers::Analyzer;
use crate::source::LayerReader;

/// Analyse one layer blob read from `reader` (as stored: compressed or not).
pub async fn analyze_layer_stream(
    reader: LayerReader,
    digest: &Digest,
    media_type: &str,
    analyzers: Arc<Vec<Box<dyn Analyzer>>>,
    limits: Limits,
) -> Result<LayerAnalysis, LayerError> {
    analyze_keeping(reader, digest, media_type, analyzers, limits, BTreeSet::new()).await
}

/// Hard-link targets a layer may be read again for (see [`analyze_layer_reopening`]).
pub const MAX_LINK_TARGET_PASSES: usize = 8;

/// [`analyze_layer_stream`] over a blob `open` opens; when a wanted hard
/// link names a file whose bytes went past ([`LayerError::UnkeptLinkTarget`]),
/// the blob is opened and read again keeping that target, up to
/// [`MAX_LINK_TARGET_PASSES`] targets. The outer error is `open`'s.
pub async fn analyze_layer_reopening<E, F, Fut>(
    mut open: F,
    digest: &Digest,
    media_type: &str,
    analyzers: Arc<Vec<Box<dyn Analyzer>>>,
    limits: Limits,
) -> Result<Result<LayerAnalysis, LayerError>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<LayerReader, E>>,
{
    let mut keep = BTreeSet::new();
    loop {
        let reader = open().await?;
        let result = analyze_keeping(
            reader,
            digest,
            media_type,
            analyzers.clone(),
            limits,
            keep.clone(),
        )
        .await;
        match result {
            Err(LayerError::UnkeptLinkTarget { target, .. })
                if keep.len() < MAX_LINK_TARGET_PASSES && !keep.contains(&target) =>
            {
                keep.insert(target);
            }
            other => return Ok(other),
        }
    }
}

async fn analyze_keeping(
    reader: LayerReader,
    digest: &Digest,
    media_type: &str,
    analyzers: Arc<Vec<Box<dyn Analyzer>>>,
    limits: Limits,
    keep: BTreeSet<String>,
) -> Result<LayerAnalysis, LayerError> {
    let bridge = SyncIoBridge::new(reader);
    let digest = digest.clone();
    let layer = digest.to_string();
    let media_type = media_type.to_owned();
    tokio::task::spawn_blocking(move || {
        analyze_layer_keeping(bridge, &digest, Some(&media_type), &analyzers, &limits, &keep)
    })
    .await
    .unwrap_or_else(|join| {
        Err(LayerError::Io {
            layer,
            source: std::io::Error::other(format!("layer task failed: {join}")),
        })
    })
}
