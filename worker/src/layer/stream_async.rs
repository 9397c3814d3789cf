//! The bridge from an async blob stream to the synchronous layer reader:
//! the walk runs in `spawn_blocking` behind `SyncIoBridge`, so CPU work
//! stays off the async runtime.

use std::sync::Arc;

use strata_proto::Digest;
use tokio_util::io::SyncIoBridge;

use super::{LayerAnalysis, LayerError, Limits, analyze_layer};
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
    let bridge = SyncIoBridge::new(reader);
    let digest = digest.clone();
    let layer = digest.to_string();
    let media_type = media_type.to_owned();
    tokio::task::spawn_blocking(move || {
        analyze_layer(bridge, &digest, Some(&media_type), &analyzers, &limits)
    })
    .await
    .unwrap_or_else(|join| {
        Err(LayerError::Io {
            layer,
            source: std::io::Error::other(format!("layer task failed: {join}")),
        })
    })
}
