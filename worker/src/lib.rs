//! Strata's analysis engine, usable on its own and run by workers.
//!
//! # Layout
//! Data flows top to bottom:
//! - `source`: image references → manifests and layer blob streams
//!   (registries, OCI layout directories, docker-archive tarballs, root dirs).
//! - `layer`: one pass over a layer blob: verify its digest, decompress,
//!   walk the tar in memory, hand wanted entries to analysers.
//! - `analyzers`: one folder per ecosystem behind the [`analyzers::Analyzer`] trait.
//! - `job`: one layer job as a worker runs it: fetch, analyse, store the
//!   inventory at its content address, return the result event.

pub mod analyzers;
pub mod job;
pub mod layer;
pub mod source;
pub mod storage;
