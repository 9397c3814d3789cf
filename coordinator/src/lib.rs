//! Strata's coordinator: fleet state, composition, the vulnerability index
//! and matching, the gRPC API, and the `strata` command line.
//!
//! # Layout
//! - [`api`]: the tonic server (Strata's services, health, reflection).
//! - [`cluster`]: the coordinator role: scans, layer dedup and dispatch over the job queue,
//!   results, composition and matching into reports, state that survives restarts.
//! - [`compose`]: ordered layer inventories → the image's packages.
//! - [`feeds`]: advisory feeds polled live: conditional fetches, per-feed state, the data in force replaced.
//! - [`engine`]: the single-process pipeline: reference → layers analysed → composed.
//! - [`metrics`]: the coordinator's metric instruments (on the process's provider).
//! - [`notify`]: fleet events (findings new and resolved) and where they go.
//! - [`output`]: report and SBOM formats (table, JSON, CycloneDX, SPDX, SARIF) and SBOM input.
//! - [`suppress`]: ignore files and OpenVEX documents that remove findings from a report.
//! - [`vulndb`]: OSV import (directories, `all.zip`, HTTP, object stores) and the local database file.
//! - [`versions`]: version ordering, one module per scheme (dpkg, apk, rpm, PEP 440, semver, Go, Maven, RubyGems),
//!   and the comparison constraints built on it.
//! - [`util`]: poison-tolerant locks (the clock and string cutting are `strata_proto::text`).

pub mod api;
pub mod cluster;
pub mod compose;
pub mod engine;
pub mod feeds;
#[doc(hidden)]
pub mod fuzzing;
pub mod matching;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod suppress;
pub mod util;
pub mod versions;
pub mod vulndb;

/// The version of this build, reported by `AdminService` and `strata --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
