//! The single-process engine: an image reference → its layers' inventories
//! → the image's packages. `strata sbom` and `strata scan` run it; the
//! cluster runs the same steps split between coordinator and workers.
//!
//! Layers are analysed concurrently (bounded), each through
//! `layer::analyze_layer_stream` (the synchronous reader, off the runtime).

use std::sync::Arc;

use futures::StreamExt;
use strata_proto::{Digest, LayerInventory};
use strata_worker::analyzers::{self, Analyzer};
use strata_worker::layer::{self, LayerError, Limits};
use strata_worker::source::{
    ImageRef, LayerDesc, Platform, ResolvedImage, Source, SourceConfig, SourceError,
};

use crate::compose::{self, ImageInventory};

/// How to run the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub source: SourceConfig,
    /// `None`: `linux/amd64` from an index, or whatever a single image is.
    pub platform: Option<Platform>,
    pub limits: Limits,
    /// Layers analysed at once.
    pub concurrency: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            source: SourceConfig::default(),
            platform: None,
            limits: Limits::default(),
            concurrency: 4,
        }
    }
}

/// Hooks for progress display. Every method has an empty default.
pub trait Progress: Send + Sync {
    fn resolved(&self, _image: &ResolvedImage) {}
    fn layer_done(&self, _index: usize, _desc: &LayerDesc, _result: &Result<LayerInventory, LayerError>) {}
}

/// A [`Progress`] that shows nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// Errors that stop the whole image (a layer's own error is in [`LayerOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("internal: layer task failed: {0}")]
    Task(String),
}

/// One layer's result.
#[derive(Debug)]
pub struct LayerOutcome {
    pub desc: LayerDesc,
    pub result: Result<LayerInventory, LayerError>,
    /// Non-fatal problems the reader or an analyser reported.
    pub warnings: Vec<String>,
}

/// An image, analysed.
#[derive(Debug)]
pub struct ImageAnalysis {
    /// The reference, normalised.
    pub reference: String,
    /// The manifest digest (`None` for a root directory).
    pub digest: Option<Digest>,
    pub platform: Option<String>,
    /// Base first. Empty for a root directory.
    pub layers: Vec<LayerOutcome>,
    /// Composed from the layers that succeeded.
    pub inventory: ImageInventory,
    pub warnings: Vec<String>,
}

impl ImageAnalysis {
    /// The first layer that failed, if any: an image with a failed layer has
    /// an incomplete inventory.
    pub fn first_layer_error(&self) -> Option<&LayerError> {
        self.layers.iter().find_map(|l| l.result.as_ref().err())
    }
}

/// Resolve `reference`, analyse its layers and compose them.
pub async fn analyze_image(
    reference: &str,
    config: &EngineConfig,
    progress: Arc<dyn Progress>,
) -> Result<ImageAnalysis, EngineError> {
    let image_ref = ImageRef::parse(reference)?;
    let analyzers: Arc<Vec<Box<dyn Analyzer>>> = Arc::new(analyzers::all());
    match Source::open(image_ref, &config.source).await? {
        Source::RootDir(root) => {
            let limits = config.limits;
            let analyzers = analyzers.clone();
            let analysis =
                tokio::task::spawn_blocking(move || layer::analyze_dir(&root, &analyzers, &limits))
                    .await
                    .map_err(|e| EngineError::Task(e.to_string()))??;
            let warnings = analysis.warnings.iter().map(ToString::to_string).collect();
            let inventory = compose::compose(std::slice::from_ref(&analysis.inventory));
            Ok(ImageAnalysis {
                reference: reference.to_owned(),
                digest: None,
                platform: None,
                layers: Vec::new(),
                inventory,
                warnings,
            })
        }
        Source::Image(source) => {
            let source: Arc<dyn strata_worker::source::ImageSource> = Arc::from(source);
            let resolved = source.resolve(config.platform.as_ref()).await?;
            progress.resolved(&resolved);
            let concurrency = config.concurrency.max(1);
            let layers: Vec<LayerOutcome> =
                futures::stream::iter(resolved.layers.iter().cloned().enumerate().map(|(index, desc)| {
                    let source = source.clone();
                    let analyzers = analyzers.clone();
                    let limits = config.limits;
                    let progress = progress.clone();
                    async move {
                        let outcome = analyze_one(source, desc, analyzers, limits).await;
                        progress.layer_done(index, &outcome.desc, &outcome.result);
                        outcome
                    }
                }))
                .buffered(concurrency)
                .collect()
                .await;
            let ok: Vec<LayerInventory> = layers
                .iter()
                .filter_map(|l| l.result.as_ref().ok().cloned())
                .collect();
            let inventory = compose::compose(&ok);
            Ok(ImageAnalysis {
                reference: resolved.reference.clone(),
                digest: Some(resolved.manifest_digest.clone()),
                platform: resolved.platform.as_ref().map(ToString::to_string),
                layers,
                inventory,
                warnings: Vec::new(),
            })
        }
    }
}

async fn analyze_one(
    source: Arc<dyn strata_worker::source::ImageSource>,
    desc: LayerDesc,
    analyzers: Arc<Vec<Box<dyn Analyzer>>>,
    limits: Limits,
) -> LayerOutcome {
    // Read again (rarely) when a wanted hard link's target went past: see
    // `layer::analyze_layer_reopening`.
    let (src, d) = (&source, &desc);
    let analysed = layer::analyze_layer_reopening(
        move || src.open_layer(d),
        &desc.digest,
        &desc.media_type,
        analyzers,
        limits,
    )
    .await
    .unwrap_or_else(|err| {
        Err(LayerError::Io {
            layer: desc.digest.to_string(),
            source: std::io::Error::other(err.to_string()),
        })
    });
    match analysed {
        Ok(analysis) => LayerOutcome {
            desc,
            warnings: analysis.warnings.iter().map(ToString::to_string).collect(),
            result: Ok(analysis.inventory),
        },
        Err(err) => LayerOutcome {
            desc,
            result: Err(err),
            warnings: Vec::new(),
        },
    }
}
