//! The contract between Strata's processes: nothing here does I/O.
//!
//! # Layout
//! - [`v1`]: wire types and gRPC stubs generated from `proto/strata/v1/*.proto`
//!   (prost + tonic). Used on gRPC and inside NATS messages.
//! - [`domain`]: the types every process stores and reasons about (serde),
//!   with conversions to and from the wire types. Object storage holds these
//!   as JSON.
//! - [`ecosystem`]: the table of ecosystem facts (OSV names, purl forms,
//!   os-release ids, families, version schemes, release and matching rules)
//!   and [`Ecosystem`], which reads it.
//! - [`purl`]: package URLs, built and parsed in one place through the table.
//! - [`text`]: helpers every crate shares: the clock in Unix milliseconds,
//!   outside input cut down for messages, error chains.

pub mod domain;
pub mod ecosystem;
pub mod purl;
pub mod text;

/// Generated from `proto/strata/v1/*.proto`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("strata.v1");

    /// Encoded `FileDescriptorSet` of every Strata proto, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strata_descriptor");
}

pub use domain::*;
