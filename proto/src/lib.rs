//! The contract between Strata's processes: nothing here does I/O.
//!
//! # Layout
//! - [`v1`]: wire types and gRPC stubs generated from `proto/strata/v1/*.proto`
//!   (prost + tonic). Used on gRPC and inside NATS messages.
//! - [`domain`]: the types every process stores and reasons about (serde),
//!   with conversions to and from the wire types. Object storage holds these
//!   as JSON.

pub mod domain;

/// Generated from `proto/strata/v1/*.proto`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("strata.v1");

    /// Encoded `FileDescriptorSet` of every Strata proto, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strata_descriptor");
}

pub use domain::*;
