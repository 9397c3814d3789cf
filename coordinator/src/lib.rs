//! Strata's coordinator: fleet state, composition, the vulnerability index
//! and matching, the gRPC API, and the `strata` command line.
//!
//! # Layout
//! - [`api`]: the tonic server (Strata's services, health, reflection).

pub mod api;

/// The version of this build, reported by `AdminService` and `strata --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
