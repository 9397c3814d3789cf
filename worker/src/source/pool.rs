//! [`SourcePool`]: registry clients kept per registry, and authorization per
//! repository, so the jobs of a worker (and the submits of a coordinator)
//! reuse HTTP connections and tokens instead of building TLS clients (about
//! 20 ms of CPU each) and authenticating for every blob or image. That
//! set-up was the largest fixed cost of a layer job, and of resolving a
//! fleet of many repositories (see loadtest `cluster_scaling`).

use std::collections::HashMap;
use std::sync::Mutex;

use oci_client::Reference;

use super::registry::{AuthSlot, RegistrySource};
use super::{ImageRef, Source, SourceConfig, SourceError};

/// Registries kept; past this the pool starts afresh (a simple bound: a
/// fleet names few registries, and a new entry costs one set of clients).
const MAX_REGISTRIES: usize = 256;
/// Repositories whose authorization is kept per registry (same bound rule).
const MAX_REPOSITORIES: usize = 4096;

#[derive(Default)]
pub struct SourcePool {
    registries: Mutex<HashMap<Key, Entry>>,
}

/// One entry per registry, per plain-HTTP setting, per credentials file.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    registry: String,
    insecure: bool,
    docker_config: Option<std::path::PathBuf>,
}

struct Entry {
    /// Holds the clients every source of this registry shares.
    template: RegistrySource,
    /// Repository → its last authorization.
    auth: HashMap<String, AuthSlot>,
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

    /// A source for `reference` sharing the connections of earlier ones for
    /// the same registry, and the authorization of the same repository.
    pub fn registry(
        &self,
        reference: Reference,
        config: &SourceConfig,
    ) -> Result<RegistrySource, SourceError> {
        let key = Key {
            registry: reference.registry().to_owned(),
            insecure: config
                .insecure_registries
                .iter()
                .any(|h| h == reference.registry() || h == reference.resolve_registry()),
            docker_config: config.docker_config.clone(),
        };
        let repository = reference.repository().to_owned();
        let mut registries = self.registries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = registries.get_mut(&key) {
            if entry.auth.len() >= MAX_REPOSITORIES && !entry.auth.contains_key(&repository) {
                entry.auth.clear();
            }
            let slot = entry.auth.entry(repository).or_default().clone();
            return Ok(entry.template.with_reference_and_auth(reference, slot));
        }
        let source = RegistrySource::new(reference, config)?;
        if registries.len() >= MAX_REGISTRIES {
            registries.clear();
        }
        let mut auth = HashMap::new();
        auth.insert(repository, source.auth_slot());
        registries.insert(
            key,
            Entry {
                template: source.with_reference_and_auth(source.reference().clone(), source.auth_slot()),
                auth,
            },
        );
        Ok(source)
    }

    /// Registries held (for tests).
    pub fn len(&self) -> usize {
        self.registries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn repositories_of_one_registry_share_its_clients() {
        let pool = SourcePool::new();
        let config = SourceConfig::default();
        let a: Reference = "registry.example/team/a:1".parse().unwrap();
        let b: Reference = "registry.example/team/b:1".parse().unwrap();
        let c: Reference = "other.example/team/a:1".parse().unwrap();
        let a1 = pool.registry(a.clone(), &config).unwrap();
        let a2 = pool.registry(a, &config).unwrap();
        let b1 = pool.registry(b, &config).unwrap();
        assert_eq!(pool.len(), 1, "one set of clients for registry.example");
        assert!(
            Arc::ptr_eq(&a1.auth_slot(), &a2.auth_slot()),
            "a's authorization is shared"
        );
        assert!(!Arc::ptr_eq(&a1.auth_slot(), &b1.auth_slot()), "b has its own");
        pool.registry(c, &config).unwrap();
        assert_eq!(pool.len(), 2);
        let insecure = SourceConfig {
            insecure_registries: vec!["registry.example".into()],
            ..SourceConfig::default()
        };
        pool.registry("registry.example/team/a:1".parse().unwrap(), &insecure)
            .unwrap();
        assert_eq!(pool.len(), 3, "plain HTTP is another entry");
    }
}
