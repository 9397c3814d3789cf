//! What `strata sbom` and `strata scan` share: how to reach an image, and
//! the progress display.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use strata_coordinator::engine::{self, EngineConfig, ImageAnalysis, Progress};
use strata_proto::LayerInventory;
use strata_worker::layer::{LayerError, Limits};
use strata_worker::source::{LayerDesc, Platform, ResolvedImage, SourceConfig};

/// How to reach an image (the image itself is each command's positional argument).
#[derive(Args, Debug, Clone)]
pub struct ImageArgs {
    /// Platform to choose from a multi-platform index: `os/arch[/variant]`.
    #[arg(long)]
    pub platform: Option<String>,
    /// A registry (`host[:port]`) to speak plain HTTP to. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// The Docker config file with registry credentials
    /// (default: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`).
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// Layers analysed at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The caps on one layer's content, for `scan`/`sbom` and the worker roles
/// (flags, and config-file keys of `strata worker` and `strata serve`).
#[derive(Args, Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LimitArgs {
    /// Cap: decompressed bytes of one layer [default: 16 GiB].
    #[arg(long, value_name = "BYTES")]
    pub max_layer_bytes: Option<u64>,
    /// Cap: bytes of one file handed to an analyser [default: 128 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_file_bytes: Option<u64>,
    /// Cap: bytes of all files captured from one layer [default: 192 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_captured_bytes: Option<u64>,
    /// Cap: tar entries in one layer [default: 2,000,000].
    #[arg(long, value_name = "N")]
    pub max_entries: Option<u64>,
    /// Cap: bytes of one entry's path [default: 4096].
    #[arg(long, value_name = "BYTES")]
    pub max_path_len: Option<u64>,
    /// Cap: archives nested in archives [default: 3].
    #[arg(long, value_name = "N")]
    pub max_nesting_depth: Option<u32>,
}

impl LimitArgs {
    /// The caps given, the defaults for the rest.
    pub fn limits(&self) -> anyhow::Result<Limits> {
        let defaults = Limits::default();
        let limits = Limits {
            max_uncompressed_bytes: self.max_layer_bytes.unwrap_or(defaults.max_uncompressed_bytes),
            max_file_bytes: self.max_file_bytes.unwrap_or(defaults.max_file_bytes),
            max_captured_bytes: self.max_captured_bytes.unwrap_or(defaults.max_captured_bytes),
            max_entries: self.max_entries.unwrap_or(defaults.max_entries),
            max_path_len: self.max_path_len.unwrap_or(defaults.max_path_len),
            max_nesting_depth: self.max_nesting_depth.unwrap_or(defaults.max_nesting_depth),
        };
        anyhow::ensure!(
            limits.max_uncompressed_bytes > 0
                && limits.max_file_bytes > 0
                && limits.max_captured_bytes > 0
                && limits.max_entries > 0
                && limits.max_path_len > 0,
            "every --max-* cap must be at least 1"
        );
        Ok(limits)
    }
}

impl ImageArgs {
    pub fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        let platform = self.platform.as_deref().map(Platform::parse).transpose()?;
        let limits = self.limits.limits()?;
        Ok(EngineConfig {
            limits,
            source: SourceConfig {
                insecure_registries: self.insecure_registries.clone(),
                docker_config: self.docker_config.clone(),
                // The user running `strata scan` is its only caller.
                policy: strata_worker::source::RegistryPolicy::open(),
            },
            platform,
            concurrency: self.concurrency.clamp(1, 64),
        })
    }

    /// Analyse `image`, with a progress bar when stderr is a terminal.
    /// A failed layer is an error: an inventory without it would be wrong.
    pub async fn analyze(&self, image: &str) -> anyhow::Result<ImageAnalysis> {
        let config = self.engine_config()?;
        let progress: Arc<dyn Progress> = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Arc::new(Bar::new())
        } else {
            Arc::new(engine::Quiet)
        };
        let analysis = engine::analyze_image(image, &config, progress).await?;
        if let Some(err) = analysis.first_layer_error() {
            anyhow::bail!("{err}");
        }
        for warning in analysis
            .warnings
            .iter()
            .chain(analysis.layers.iter().flat_map(|l| &l.warnings))
        {
            tracing::warn!(image = %image, "{warning}");
        }
        Ok(analysis)
    }
}

/// A progress bar over the image's layers, on stderr.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_message("resolving image");
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Bar(bar)
    }
}

impl Progress for Bar {
    fn resolved(&self, image: &ResolvedImage) {
        self.0.set_length(image.layers.len() as u64);
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} layers") {
            self.0.set_style(style.progress_chars("=> "));
        }
        self.0.set_message(format!("analysing {}", image.reference));
    }
    fn layer_done(&self, _index: usize, _desc: &LayerDesc, _result: &Result<LayerInventory, LayerError>) {
        self.0.inc(1);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
