//! Strata's coordinator.
