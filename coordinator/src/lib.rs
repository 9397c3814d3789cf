//! Strata's coordinator.
pub mod versions;
