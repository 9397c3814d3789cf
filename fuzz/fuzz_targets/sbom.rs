//! SBOM input (`strata scan --sbom`): CycloneDX and SPDX JSON, the format
//! told apart by a first probe, packages identified by their purls.
#![no_main]

use libfuzzer_sys::fuzz_target;
// The shared allocation cap (a global allocator) is linked by naming the crate.
use strata_coordinator::output::sbom_in;
use strata_fuzz as _;

fuzz_target!(|data: &[u8]| {
    let _ = sbom_in::read_with_details(data);
});
