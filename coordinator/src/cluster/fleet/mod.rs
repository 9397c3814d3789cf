//! The fleet view behind `FleetService`: registered images and
//! repositories, and an in-memory index over the latest scan of every image
//! so "which images does CVE-x hit, and in which layer?" is answered from
//! memory, not by reading 10,000 reports.
//!
//! # What is stored, what is derived
//! - The truth stays in the buckets and the object store: image records
//!   (`ref.<hash>`) and repository records (`repo.<hash>`) in
//!   `strata_images`, scans in `strata_scans`, reports at `reports/<scan>.json`.
//! - [`FleetIndex`] is derived from them: filled lazily on the first fleet
//!   query after a start (or by the warm-up `run()` starts), then kept
//!   current by hooks where the coordinator writes an image record, a scan
//!   record or a report. Hooks only ever carry newer data than the bucket
//!   reads of a concurrent load, so a load never overwrites what a hook set.
//! - Findings are matched against the vulnerability data in force: a report
//!   matched under an older data version is re-matched from its stored
//!   packages (rayon, each distinct package once) before a query answers,
//!   so a new advisory hits old scans without pulling anything.
//!
//! # Layout
//! - this file: the bounds on what a client sends, repository records and
//!   their keys, and how repositories are spelled.
//! - `index.rs`: [`FleetIndex`]: interning, the per-scan entries, the lookups.
//! - `load.rs`: hooks that keep it current, the lazy load, re-matching.
//! - `watch.rs`: register / unregister images and repositories, tag
//!   listing, the refresh loop.
//! - `query.rs`: [`PackageQuery`], [`AffectedQuery`], [`ImageFilter`] and the
//!   `ListImages` / `ListAffected` / `Summary` answers.
//! - `page.rs`: page tokens and paging.
//! - `tests.rs`: coordinator-level tests (canned registry, re-matching).
//!
//! # Sizes
//! Every count a client controls is bounded here: references per request,
//! page sizes, page tokens, tags per repository, `top_n`, version ranges
//! (their length and comparisons by [`Conjunction`](crate::versions::constraint::Conjunction)).

mod history;
mod index;
mod load;
mod page;
mod query;
mod rematch;
#[cfg(test)]
mod tests;
mod watch;

pub use history::{Histories, History, Reconciled};
pub use index::FleetIndex;
pub(in crate::cluster) use load::REMATCH_REQUEST_KEY;
pub use query::{AffectedQuery, FleetSummary, ImageFilter, PackageQuery};
pub use rematch::RematchSummary;
pub(crate) use watch::check_reference_count;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use strata_worker::source::ImageRef;

use super::{CoordinatorError, validate_reference};
use strata_proto::text::cut;

/// References accepted in one register or unregister request.
pub const MAX_REFERENCES: usize = 1000;
/// Page size when the client gives none.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page served, whatever the client asks.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Longest page token accepted (ours are at most about 1,000 bytes).
pub const MAX_PAGE_TOKEN: usize = 1024;
/// Tags read from one repository: beyond this the registry is refused, not truncated silently.
pub const MAX_TAGS: usize = 10_000;
/// Top vulnerabilities in `Summary` by default, and at most.
pub const DEFAULT_TOP_N: usize = 10;
pub const MAX_TOP_N: usize = 100;
/// Longest vulnerability id, package name, tag pattern or platform accepted (a version
/// range is bounded by [`Conjunction::MAX_LEN`](crate::versions::constraint::Conjunction::MAX_LEN)).
const MAX_QUERY_LEN: usize = 256;
/// Tags registered, or reports read, at once.
const CONCURRENCY: usize = 8;
/// One page of a tag list (JSON) read at most.
const MAX_TAG_PAGE_BYTES: u64 = 4 << 20;
/// Pages of a tag list followed at most (registries page by 100 to 1,000).
const MAX_TAG_PAGES: usize = 200;

const IMAGE_PREFIX: &str = "ref.";
const REPOSITORY_PREFIX: &str = "repo.";

/// A watched repository: every tag matching `tag_pattern` is registered.
/// Kept in `strata_images` so `UnregisterRepository` knows what it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryRecord {
    pub repository: String,
    #[serde(default)]
    pub tag_pattern: String,
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub insecure_registry: bool,
    pub updated_unix_ms: i64,
}

/// The key of a registered repository.
pub fn repository_key(repository: &str) -> String {
    let h = sha2::Sha256::digest(repository.as_bytes());
    format!("{REPOSITORY_PREFIX}{}", &hex::encode(h)[..32])
}

/// The repository part of a reference (`registry/name`, without tag or
/// digest), normalised as the registry sees it (`nginx` → `docker.io/library/nginx`).
pub fn repository_of(reference: &str) -> String {
    match ImageRef::parse(reference) {
        Ok(ImageRef::Registry(r)) => format!("{}/{}", r.registry(), r.repository()),
        _ => {
            let no_digest = reference.split_once('@').map_or(reference, |(a, _)| a);
            match no_digest.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => repo.to_owned(),
                _ => no_digest.to_owned(),
            }
        }
    }
}

/// Normalises a repository as clients write it (`ghcr.io/acme/api`, maybe with a trailing `/`).
fn normalise_repository(repository: &str) -> Result<String, CoordinatorError> {
    let repository = repository.trim().trim_end_matches('/');
    validate_reference(repository)?;
    let bad = |why: &str| {
        CoordinatorError::InvalidArgument(format!("repository {:?}: {why}", cut(repository, 200)))
    };
    if repository.contains('@')
        || repository
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
    {
        return Err(bad("give the repository without a tag or digest"));
    }
    match ImageRef::parse(repository).map_err(CoordinatorError::from)? {
        ImageRef::Registry(r) => Ok(format!("{}/{}", r.registry(), r.repository())),
        _ => Err(bad("not a registry repository")),
    }
}

#[cfg(test)]
mod repository_tests {
    use super::*;

    #[test]
    fn repositories_normalise() {
        assert_eq!(
            repository_of("127.0.0.1:5000/fleet/app:v1"),
            "127.0.0.1:5000/fleet/app"
        );
        assert_eq!(
            repository_of(
                "127.0.0.1:5000/fleet/app@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            ),
            "127.0.0.1:5000/fleet/app"
        );
        assert_eq!(
            normalise_repository("127.0.0.1:5000/fleet/app/").unwrap(),
            "127.0.0.1:5000/fleet/app"
        );
        assert!(normalise_repository("127.0.0.1:5000/fleet/app:v1").is_err());
    }
}
