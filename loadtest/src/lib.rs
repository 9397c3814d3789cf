//! Benchmarks and the fleet generator. Each benchmark is a binary under
//! `src/bin/` that prints its figures as ratios against a baseline measured
//! in the same run.

pub mod memory;
pub mod synth;
