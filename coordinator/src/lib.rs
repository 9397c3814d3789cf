//! Strata's coordinator.
pub mod compose;
