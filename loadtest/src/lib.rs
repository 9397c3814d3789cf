//! Benchmarks and the fleet generator. Each benchmark is a binary under
//! `src/bin/` that prints its figures as ratios against a baseline measured
//! in the same run.

pub mod fleetgen;
pub mod fleetrun;
pub mod memory;
pub mod plot;
pub mod soak;
pub mod synth;
pub mod synthreg;
