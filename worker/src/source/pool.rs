//! [`SourcePool`]: registry sources kept per repository, so the jobs of a
//! worker (and the submits of a coordinator) reuse HTTP connections and
//! authorization instead of building TLS clients and authenticating for
//! every blob. That per-job set-up was the largest fixed cost of a layer job
//! against a registry with latency (see loadtest `cluster_scaling`).

use std::collections::HashMap;
use std::sync::Mutex;

use oci_client::Reference;

use super::registry::RegistrySource;
use super::{ImageRef, Source, SourceConfig, SourceError};

/// Repositories kept; past this the pool starts afresh (a simple bound: a
/// worker sees few repositories at a time, and a new entry costs one client).
const MAX_REPOSITORIES: usize = 1024;

#[derive(Default)]
pub struct SourcePool {
    sources: Mutex<HashMap<Key, RegistrySource>>,
}

/// One entry per repository, per plain-HTTP setting, per credentials file.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    registry: String,
    repository: String,
    insecure: bool,
    docker_config: Option<std::path::PathBuf>,
}

impl SourcePool {
    pub fn new() -> SourcePool {
        SourcePool::default()
    }

    /// Like [`Source::open`], with registry sources drawn from the pool.
    pub async fn open(&self, reference: ImageRef, config: &SourceConfig) -> Result<Source, SourceError> {
        match reference {
            ImageRef::Registry(r) => Ok(Source::Image(Box::new(self.registry(r, config)?))),
            other => Source::open(other, config).await,
        }
    }

    /// A source for `reference` sharing the connections and authorization of
    /// earlier ones for the same repository.
    pub fn registry(
        &self,
        reference: Reference,
        config: &SourceConfig,
    ) -> Result<RegistrySource, SourceError> {
        let key = Key {
            registry: reference.registry().to_owned(),
            repository: reference.repository().to_owned(),
            insecure: config
                .insecure_registries
                .iter()
                .any(|h| h == reference.registry() || h == reference.resolve_registry()),
            docker_config: config.docker_config.clone(),
        };
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(template) = sources.get(&key) {
            return Ok(template.with_reference(reference));
        }
        let source = RegistrySource::new(reference.clone(), config)?;
        if sources.len() >= MAX_REPOSITORIES {
            sources.clear();
        }
        sources.insert(key, source.with_reference(reference));
        Ok(source)
    }

    /// Repositories held (for tests).
    pub fn len(&self) -> usize {
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
